# Two ordinary apps that join the mesh through their Consul service registration alone (docs/nomad.md).
#
# Neither app knows about the mesh: "web" calls its upstream at a plain http://127.0.0.1:9001, and "api" answers
# plain HTTP. What puts them in the mesh is in their service blocks: the tag "mesh" opts a service in, meta
# mesh-protocol says what it speaks, and meta mesh-upstreams asks the node's agent for a local port that leads to
# another mesh service. The mesh-agent system job must run on the clients (nomad/mesh-agent.nomad.hcl).
#
# The apps here are mesh-agent's own sample service (it answers with the caller identity the mesh passed it), so
# the example needs nothing but the mesh-agent package; any app that listens on its Nomad address works the same.

job "example-app" {
  type        = "service"
  datacenters = ["*"]

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "api" {
    count = 1

    network {
      mode = "host"
      port "http" {}
    }

    task "api" {
      driver = "exec"

      config {
        command = "/usr/bin/mesh-agent"
        args    = ["sample-service", "--name", "api", "--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}"]
      }

      service {
        provider = "consul"
        name     = "api"
        port     = "http"
        # "mesh" opts in; key=value tags become endpoint labels (DestinationRule subsets, e.g. version: v1).
        tags = ["mesh", "version=v1"]

        meta {
          mesh-protocol = "http"
        }

        check {
          type     = "http"
          path     = "/"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }

  group "web" {
    count = 1

    network {
      mode = "host"
      port "http" {}
    }

    task "web" {
      driver = "exec"

      config {
        command = "/usr/bin/mesh-agent"
        args = [
          "sample-service", "--name", "web", "--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}",
          "--upstream", "http://127.0.0.1:9001",
        ]
      }

      service {
        provider = "consul"
        name     = "web"
        port     = "http"
        tags     = ["mesh"]

        meta {
          mesh-protocol = "http"
          # The agent on this node listens on 127.0.0.1:9001 and sends what arrives there to "api" (namespace
          # default) over mTLS, as web's identity, HTTP-aware. More upstreams: comma-separated.
          mesh-upstreams = "api:9001/http"
        }

        # /local answers without calling the upstream, so web's health does not depend on api's.
        check {
          type     = "http"
          path     = "/local/health"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
