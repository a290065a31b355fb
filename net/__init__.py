"""Wire format: message types, msgpack codec, Ed25519 identities, signed envelopes, Merkle
helpers and replay protection.

Pure and I/O-free apart from key files, so both the engine and every driver can import it;
transports live in their own modules and are never imported from here.
"""
