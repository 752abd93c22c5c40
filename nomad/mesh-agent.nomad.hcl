# mesh-agent on every Nomad client node, as a system job. The join token comes from a Nomad
# variable (nomad var put nomad/jobs/mesh-agent join_token=meshjoin1_...); the state dir
# lives on the host so a restarted allocation reuses its enrollment.
job "mesh-agent" {
  type = "system"

  group "agent" {
    network {
      mode = "host"
      port "inbound" { static = 15443 }
    }

    task "mesh-agent" {
      driver = "raw_exec"

      config {
        command = "/usr/bin/mesh-agent"
        args    = ["agent", "--config", "/etc/mesh-agent/agent.yaml", "--state-dir", "/var/lib/mesh-agent"]
      }

      template {
        destination = "secrets/join.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/mesh-agent" }}MESH_JOIN_TOKEN={{ .join_token }}{{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
