# W3: N rules (fact peers_count) in one chain (nat/MESHVM_W3) and the jump to it, first in OUTPUT for TCP; rule i as in
# bench/peers/meshvm/w3-rules.ts. One firewall resource per rule, named so that name order is rule order.
$count = Integer($facts['peers_count'])

firewallchain { 'MESHVM_W3:nat:IPv4':
  ensure => present,
}

$count.each |Integer $i| {
  firewall { sprintf('%05d MESHVM_W3 rule', $i):
    table       => 'nat',
    chain       => 'MESHVM_W3',
    proto       => 'tcp',
    destination => "10.${$i / 256}.${$i % 256}.1",
    dport       => 10000 + $i,
    jump        => 'REDIRECT',
    toports     => 15001,
  }
}

firewall { '000 jump to MESHVM_W3':
  table   => 'nat',
  chain   => 'OUTPUT',
  proto   => 'tcp',
  jump    => 'MESHVM_W3',
  require => Firewall[sprintf('%05d MESHVM_W3 rule', $count - 1)],
}
