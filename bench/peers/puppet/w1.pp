# W1, the mesh VM: the same desired state as bench/peers/meshvm/w1.yaml, under the scratch root (fact peers_root) and in
# the network namespace puppet apply runs in. Run: FACTER_peers_root=DIR FACTER_peers_certs=DIR puppet apply w1.pp
$root = $facts['peers_root']
$certs = $facts['peers_certs']

File {
  owner => 'root',
  group => 'root',
}

# Puppet creates no parents: every directory is declared (and autorequired by what is inside it)
file { ["${root}/etc", "${root}/etc/istio", "${root}/etc/istio/proxy", "${root}/var", "${root}/var/lib", "${root}/var/lib/istio",
        "${root}/var/log", "${root}/var/log/istio", "${root}/var/lib/istio/envoy", "${root}/etc/dnsmasq.d", "${root}/etc/certs"]:
  ensure => directory,
  mode   => '0755',
}

file { "${root}/var/lib/istio/envoy/cluster.env":
  ensure  => file,
  mode    => '0644',
  content => "ISTIO_SERVICE_CIDR=10.63.240.0/20\nISTIO_SYSTEM_NAMESPACE=istio-system\nISTIO_CP_AUTH=MUTUAL_TLS\n",
}

file { "${root}/var/lib/istio/envoy/sidecar.env":
  ensure  => file,
  mode    => '0644',
  content => "ISTIO_INBOUND_PORTS=27017,3306,8080\n",
}

file { "${root}/etc/dnsmasq.d/kubedns":
  ensure  => file,
  mode    => '0644',
  content => @(KUBEDNS),
    server=/svc.cluster.local/10.150.0.7
    address=/istio-mixer/10.150.0.8
    address=/istio-pilot/10.150.0.6
    address=/istio-ca/10.150.0.9
    address=/istio-mixer.istio-system/10.150.0.8
    address=/istio-pilot.istio-system/10.150.0.6
    address=/istio-ca.istio-system/10.150.0.9
    | KUBEDNS
}

file { "${root}/etc/certs/root-cert.pem":
  ensure => file,
  mode   => '0644',
  source => "${certs}/root-cert.pem",
}

file { "${root}/etc/certs/cert-chain.pem":
  ensure => file,
  mode   => '0644',
  source => "${certs}/cert-chain.pem",
}

file { "${root}/etc/certs/key.pem":
  ensure    => file,
  mode      => '0600',
  source    => "${certs}/key.pem",
  show_diff => false,
}

file { "${root}/etc/resolv.conf":
  ensure  => file,
  mode    => '0644',
  content => @(RESOLV),
    # Managed by meshvm (resolv_conf[meshvm]); edits here are overwritten on the next run.
    # Nothing else on this host is known to rewrite it.
    nameserver 127.0.0.1
    search istio-system.svc.cluster.local svc.cluster.local cluster.local
    options ndots:5
    | RESOLV
}

# the hosts line: stdlib's file_line (a line, without the block markers meshvm and Ansible write around it)
file_line { 'istio-pilot in /etc/hosts':
  path => "${root}/etc/hosts",
  line => '10.150.0.6 istio-pilot.istio-system.svc.cluster.local istio-pilot',
}

# the inbound chain with puppetlabs-firewall: the chain, one firewall resource per rule (ordered by name), the jump
firewallchain { 'MESHVM_INBOUND:nat:IPv4':
  ensure => present,
}

Firewall {
  table => 'nat',
  proto => 'tcp',
}

firewall { '001 inbound 15008 return':
  chain => 'MESHVM_INBOUND',
  dport => 15008,
  jump  => 'RETURN',
}
firewall { '002 inbound 22 return':
  chain => 'MESHVM_INBOUND',
  dport => 22,
  jump  => 'RETURN',
}
firewall { '003 inbound 15090 return':
  chain => 'MESHVM_INBOUND',
  dport => 15090,
  jump  => 'RETURN',
}
firewall { '004 inbound 27017 to the sidecar':
  chain   => 'MESHVM_INBOUND',
  dport   => 27017,
  jump    => 'REDIRECT',
  toports => 15006,
}
firewall { '005 inbound 3306 to the sidecar':
  chain   => 'MESHVM_INBOUND',
  dport   => 3306,
  jump    => 'REDIRECT',
  toports => 15006,
}
firewall { '006 inbound 8080 to the sidecar':
  chain   => 'MESHVM_INBOUND',
  dport   => 8080,
  jump    => 'REDIRECT',
  toports => 15006,
}
firewall { '000 jump to MESHVM_INBOUND':
  chain   => 'PREROUTING',
  jump    => 'MESHVM_INBOUND',
  require => Firewall['006 inbound 8080 to the sidecar'],
}
