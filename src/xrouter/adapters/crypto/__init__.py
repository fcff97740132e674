"""Cryptography adapters: sealing what the gateway gives clients to hand back."""
