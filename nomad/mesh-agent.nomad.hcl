# mesh-agent on every Linux Nomad client: a system job, one allocation per eligible node (docs/nomad.md).
#
# Before `nomad job run`:
# - /usr/bin/mesh-agent installed on every client, and raw_exec enabled in the client config:
#     plugin "raw_exec" { config { enabled = true } }
# - Consul on every client (HTTP API on 127.0.0.1:8500). Agents on other nodes learn which port leads to the
#   services Nomad registers here from this node's mesh-agent registration (node_meta mesh-inbound-port may pin it).
# - A Nomad variable with a join token (and, with Consul ACLs, the agent's Consul token):
#     nomad var put nomad/jobs/mesh-agent join_token=meshjoin1_... consul_token=<secret or empty>
#
# Driver: raw_exec, not exec. The agent is node infrastructure, like the Consul agent: its identity (node key,
# certificates, enrollment) must outlive any one allocation, so it lives in a host directory
# (/var/lib/mesh-agent) that raw_exec can use directly, while exec would need a host volume per client; it binds
# the host's ports; and transparent capture (issue 7) will program the host's network namespace with
# CAP_NET_ADMIN, which exec's default allow_caps does not grant. The price: the task runs as the Nomad client's
# user (root) without isolation, so keep this job file under the same change control as the client config.

job "mesh-agent" {
  type        = "system"
  datacenters = ["*"]
  priority    = 80

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # System jobs honour only max_parallel and stagger: replace one node's agent at a time.
  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "agent" {
    network {
      mode = "host"
      # Other agents dial this port (mTLS); the agent announces it in its Consul registration's meta.
      port "inbound" {
        static = 15443
      }
      # The admin API (/ready, /status) listens on 127.0.0.1 only; the port is reserved so nothing else takes it.
      port "admin" {
        static = 15000
      }
    }

    # A system job is never rescheduled elsewhere: keep restarting here, with a delay, instead of giving up.
    restart {
      attempts = 10
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    task "mesh-agent" {
      driver = "raw_exec"

      config {
        command = "/usr/bin/mesh-agent"
        args    = ["agent", "--config", "${NOMAD_TASK_DIR}/agent.yaml", "--log-format", "json"]
      }

      # SIGTERM: the agent deregisters from Consul, drains open connections and exits 0 (docs/nomad.md).
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # The join token is read on the first start only (the state dir keeps the enrollment), so a new token in
      # the variable must not restart running agents: noop.
      template {
        destination = "secrets/join.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/mesh-agent" }}MESH_JOIN_TOKEN={{ .join_token }}{{ end }}
        EOT
      }

      # The agent reads its Consul token file when it starts; a new token takes a restart. An absent key renders
      # an empty file, which means "no token" (Consul without ACLs).
      template {
        destination = "secrets/consul-token"
        perms       = "600"
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/mesh-agent" }}{{ .consul_token }}{{ end }}
        EOT
      }

      # The agent config, with this node's identity from Nomad's runtime variables. A change is applied without a
      # restart: Nomad rewrites the file and sends SIGHUP, and the agent reloads its config file.
      template {
        destination   = "local/agent.yaml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          # Rendered by Nomad (job mesh-agent); edit the job, not this file.
          nodeName: {{ env "node.unique.name" }}
          address: {{ env "attr.unique.network.ip-address" }}
          stateDir: /var/lib/mesh-agent
          inbound:
            listen: 0.0.0.0:{{ env "NOMAD_PORT_inbound" }}
          admin:
            listen: 127.0.0.1:{{ env "NOMAD_PORT_admin" }}
          policyFile: policy.yaml
          consul:
            address: 127.0.0.1:8500
            tokenFile: {{ env "NOMAD_SECRETS_DIR" }}/consul-token
            # Every service Nomad registers on this node with tag "mesh" (or meta mesh-enabled = "true") joins
            # the mesh: inbound on this agent, its upstreams on 127.0.0.1 (docs/consul.md).
            localServices: true
        EOT
      }

      # Istio VirtualService / DestinationRule documents (docs/routing.md) from the variable's `policy` key,
      # applied by SIGHUP when the key changes. An absent key renders an empty policy.
      template {
        destination   = "local/policy.yaml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          {{ with nomadVar "nomad/jobs/mesh-agent" }}{{ .policy }}{{ end }}
        EOT
      }

      # Nomad's own registration, for Nomad: deployment health and check_restart. The admin API is loopback-only,
      # so the service is registered at 127.0.0.1 and the local Consul agent runs the check there. (The agent
      # registers itself as "mesh-agent", with the node's address and the inbound port, for other agents.)
      service {
        provider = "consul"
        name     = "mesh-agent-admin"
        port     = "admin"
        address  = "127.0.0.1"
        tags     = ["mesh-agent"]

        meta {
          node-id = "${node.unique.id}"
          alloc   = "${NOMAD_ALLOC_ID}"
        }

        check {
          name     = "mesh-agent ready"
          type     = "http"
          path     = "/ready"
          interval = "10s"
          timeout  = "2s"

          # Restart an agent that stays unready for 3 checks in a row, after a start-up grace period in which
          # it enrolls and gets its certificates.
          check_restart {
            limit = 3
            grace = "60s"
          }
        }
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
