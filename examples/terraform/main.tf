# Converge a VM into the mesh from Terraform: remote-exec runs meshvm over ssh; a failing converge fails the apply.
# The VM already has meshvm in /usr/local/bin (from its image, or cloud-init) and its Vault credentials (the files
# node.yaml names); node.yaml, given here, says who it is.
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

resource "terraform_data" "meshvm" {
  # converge again whenever the VM's attributes change
  triggers_replace = [sha256(var.node_yaml), var.runlist]

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
    inline = [
      "set -eu",
      "install -d -m 0755 /etc/meshvm && install -m 0600 /tmp/meshvm-node.yaml /etc/meshvm/node.yaml && rm -f /tmp/meshvm-node.yaml",
      "meshvm runlist ${var.runlist} > /etc/meshvm/runlist.yaml",
      # waits for a converge already running (boot, timer) instead of racing it; exit 1 fails the apply
      "meshvm converge /etc/meshvm/runlist.yaml --lock-wait 900",
    ]
  }
}
