"""Gateway key adapters: the keyed hash of secrets (hashing.py) and the key stores: memory
(memory.py), a TOML file (toml_file.py); the Redis store is adapters/redis/key_store.py."""
