# Converge a VM into the mesh from Terraform: remote-exec runs meshvm over ssh; a failing converge fails the apply.
# The VM has its Vault credentials (the files node.yaml names) and either meshvm already (its image, or cloud-init) or,
# with meshvm_deb_url and meshvm_deb_sha256 set, gets the meshvm .deb (npm run package) from your artifact store, checked
# against its sha256, installed with apt-get. node.yaml, given here, says who it is.
terraform {
  required_version = ">= 1.5"
}

variable "host" { type = string }
variable "port" {
  type    = number
  default = 22
}
variable "user" {
  type    = string
  default = "root"
}
variable "private_key_file" { type = string }
variable "node_yaml" {
  type        = string
  description = "The VM's /etc/meshvm/node.yaml (workload, how to reach Vault)"
}
variable "runlist" {
  type    = string
  default = "istio-vm"
}
variable "meshvm_deb_url" {
  type        = string
  default     = null
  description = "The meshvm .deb in your artifact store (https); null: meshvm is already on the VM"
}
variable "meshvm_deb_sha256" {
  type    = string
  default = null
  validation {
    condition     = var.meshvm_deb_sha256 == null || can(regex("^[0-9a-f]{64}$", var.meshvm_deb_sha256))
    error_message = "meshvm_deb_sha256: the .deb's sha256, 64 lowercase hex digits."
  }
}

resource "terraform_data" "meshvm" {
  # converge again whenever the VM's attributes change
  triggers_replace = [sha256(var.node_yaml), var.runlist, var.meshvm_deb_sha256]

  lifecycle {
    precondition {
      condition     = (var.meshvm_deb_url == null) == (var.meshvm_deb_sha256 == null)
      error_message = "meshvm_deb_url and meshvm_deb_sha256 go together: the .deb is installed only when its sha256 matches."
    }
  }

  connection {
    type        = "ssh"
    host        = var.host
    port        = var.port
    user        = var.user
    private_key = file(var.private_key_file)
  }

  provisioner "file" {
    content     = var.node_yaml
    destination = "/tmp/meshvm-node.yaml"
  }

  provisioner "remote-exec" {
    inline = concat(
      ["set -eu"],
      var.meshvm_deb_url == null ? [] : [
        "curl -fsSL --retry 5 -o /tmp/meshvm.deb '${var.meshvm_deb_url}'",
        "echo '${var.meshvm_deb_sha256}  /tmp/meshvm.deb' | sha256sum -c -",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/meshvm.deb && rm -f /tmp/meshvm.deb",
      ],
      [
        "install -d -m 0755 /etc/meshvm && install -m 0600 /tmp/meshvm-node.yaml /etc/meshvm/node.yaml && rm -f /tmp/meshvm-node.yaml",
        "meshvm runlist ${var.runlist} > /etc/meshvm/runlist.yaml",
        # waits for a converge already running (boot, timer) instead of racing it; exit 1 fails the apply
        "meshvm converge /etc/meshvm/runlist.yaml --lock-wait 900",
      ],
    )
  }
}
