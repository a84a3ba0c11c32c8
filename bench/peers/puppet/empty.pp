# The empty-run floor: no resources (puppet apply still compiles a catalog, runs facter and writes its state and report).
