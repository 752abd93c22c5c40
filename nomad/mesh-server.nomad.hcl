# The mesh-agent control plane (CA, enrollment, agent channel) as a Nomad service job: one instance (docs/nomad.md).
#
# Its state (mesh.db: the CA key, tokens, agents) must survive the allocation, so it lives in a host volume.
# Declare the volume on the one client that is to run the server, and only there; Nomad places the job on a
# client that has it:
#     client {
#       host_volume "mesh-server-data" {
#         path      = "/var/lib/mesh-server"   # mkdir -m 0700, owned by the mesh-agent user
#         read_only = false
#       }
#     }
#
# Driver: exec. The server needs nothing from the host but its binary (under /usr, which exec's chroot
# includes), its volume and two ports, so it runs isolated and unprivileged, as the mesh-agent user.

job "mesh-server" {
  type        = "service"
  datacenters = ["*"]

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "server" {
    # One server: it owns the CA and the SQLite store, which must not have two writers.
    count = 1

    network {
      mode = "host"
      # Join tokens carry this address, so it must not move: a static port.
      port "agent" {
        static = 15010
      }
    }

    volume "data" {
      type      = "host"
      source    = "mesh-server-data"
      read_only = false
    }

    restart {
      attempts = 10
      interval = "30m"
      delay    = "15s"
      mode     = "delay"
    }

    task "mesh-server" {
      driver = "exec"
      user   = "mesh-agent"

      config {
        command = "/usr/bin/mesh-agent"
        args = [
          "server",
          "--data-dir", "/var/lib/mesh-server",
          "--listen", "0.0.0.0:${NOMAD_PORT_agent}",
          "--advertise", "${NOMAD_ADDR_agent}",
          "--log-format", "json",
        ]
      }

      volume_mount {
        volume      = "data"
        destination = "/var/lib/mesh-server"
        read_only   = false
      }

      # SIGTERM: the server closes the agent channel and the store cleanly and exits 0; agents keep serving with
      # the certificates they hold and reconnect when it is back.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      service {
        provider = "consul"
        name     = "mesh-server"
        port     = "agent"
        tags     = ["mesh-control-plane"]

        # A real request on the agent port (TLS 1.3): the trust bundle, which needs no credentials. The mesh CA is
        # not one Consul trusts, hence tls_skip_verify; agents pin the CA themselves.
        check {
          name            = "mesh-server bundle"
          type            = "http"
          protocol        = "https"
          tls_skip_verify = true
          path            = "/v1/bundle"
          interval        = "10s"
          timeout         = "2s"
        }
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
