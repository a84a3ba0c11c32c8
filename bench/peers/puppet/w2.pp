# W2: N files (fact peers_count) with content and mode in one directory, as bench/many-files.ts declares them.
$root = $facts['peers_root']
$count = Integer($facts['peers_count'])

# Puppet creates no parents: /srv is declared too
file { ["${root}/srv", "${root}/srv/files"]:
  ensure => directory,
  mode   => '0755',
  owner  => 'root',
  group  => 'root',
}

$count.each |Integer $i| {
  file { sprintf('%s/srv/files/f%04d.conf', $root, $i):
    ensure  => file,
    content => "key=${i}\nvalue=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    mode    => '0644',
    owner   => 'root',
    group   => 'root',
  }
}
