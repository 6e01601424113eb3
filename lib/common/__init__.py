"""What every part of lib/ may use, and which imports nothing else of lib/: request identifiers and the datastore
paths they may name, the server's limits, and its scratch folders."""
