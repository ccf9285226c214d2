//! SPIFFE identities, the certificate authority, pod credentials, rustls configs and verifiers, rotation.
