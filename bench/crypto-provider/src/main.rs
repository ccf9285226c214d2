//! ring against aws-lc-rs for the mesh's TLS (BENCHMARKS.md, "Issue 15: the crypto provider"):
//!
//! 1. AEAD seal and open of one full TLS record (16 KiB) with each provider's AES-128-GCM, AES-256-GCM and
//!    ChaCha20-Poly1305: TSC cycles per byte, the fastest of many batches (the machine is shared; the
//!    minimum is what the code costs when it is not preempted).
//! 2. A TLS 1.3 mutual-TLS handshake as the mesh makes it (ECDSA P-256 certificates from one CA, client
//!    certificate required, no tickets), client and server in memory: TSC cycles per handshake (fastest
//!    batch) and heap allocations per handshake.
//! 3. Memory per established connection: heap bytes held by `N` client and `N` server connections after
//!    their handshake and one 1 kB record each way, over `2N` (glibc's `mallinfo2`, which also sees
//!    aws-lc's own `malloc`s; in brackets what went through Rust's allocator).
//!
//! Run: `cargo run --release` in this directory (its own workspace, so aws-lc-rs never enters the
//! proxy's dependency tree). `IRONMESH_CRYPTO_CONNECTIONS` sets N (default 1,000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes in use in glibc's heap: Rust's allocations (the counting allocator forwards to malloc) and
/// aws-lc's own, which it makes with malloc and Rust's allocator never sees.
fn malloc_in_use() -> isize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { mallinfo2() };
    (info.uordblks + info.hblkhd) as isize
}

fn cycles() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The fewest TSC cycles one call of `f` took, over `batches` batches of `per_batch` calls.
fn fastest(batches: usize, per_batch: usize, mut f: impl FnMut()) -> f64 {
    let mut best = u64::MAX;
    for _ in 0..batches {
        let start = cycles();
        for _ in 0..per_batch {
            f();
        }
        best = best.min(cycles() - start);
    }
    best as f64 / per_batch as f64
}

const RECORD: usize = 16 * 1024;

/// ring and aws-lc-rs share the `aead` API, so one body measures both.
macro_rules! aead_rows {
    ($provider:literal, $aead:path) => {{
        use $aead as aead;
        for (name, algorithm) in [
            ("AES-128-GCM", &aead::AES_128_GCM),
            ("AES-256-GCM", &aead::AES_256_GCM),
            ("ChaCha20-Poly1305", &aead::CHACHA20_POLY1305),
        ] {
            let key_bytes = vec![0x42u8; algorithm.key_len()];
            let key = aead::LessSafeKey::new(aead::UnboundKey::new(algorithm, &key_bytes).unwrap());
            let mut data = vec![7u8; RECORD];
            let mut counter = 0u64;
            let seal = fastest(5000, 1, || {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(&[23u8, 3, 3, 64, 17][..]),
                        &mut data,
                    )
                    .unwrap();
                let _ = std::hint::black_box(tag);
            });
            // Open needs a real ciphertext: seal one, then open copies of it.
            let nonce = [9u8; 12];
            let mut sealed = vec![7u8; RECORD];
            key.seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut sealed,
            )
            .unwrap();
            let mut scratch = sealed.clone();
            let open = fastest(5000, 1, || {
                scratch.copy_from_slice(&sealed);
                let plain = key
                    .open_in_place(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::empty(),
                        &mut scratch,
                    )
                    .unwrap();
                let _ = std::hint::black_box(plain);
            });
            // The copy back into `scratch` is part of `open`'s figure; subtract what a copy costs.
            let copy = fastest(5000, 1, || {
                scratch.copy_from_slice(&sealed);
                std::hint::black_box(&scratch);
            });
            println!(
                "| {} | {name} | {:.3} | {:.3} |",
                $provider,
                seal / RECORD as f64,
                (open - copy) / RECORD as f64,
            );
        }
    }};
}

struct Pki {
    root: CertificateDer<'static>,
    server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sa: &str| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        // The SPIFFE ID the mesh checks, and a DNS name for rustls's stock verifier to match.
        params.subject_alt_names = vec![
            SanType::URI(
                format!("spiffe://cluster.local/ns/foo/sa/{sa}")
                    .try_into()
                    .unwrap(),
            ),
            SanType::DnsName(format!("{sa}.foo.svc.cluster.local").try_into().unwrap()),
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    };
    Pki {
        root: ca.der().clone(),
        server: leaf("app"),
        client: leaf("client"),
    }
}

fn configs(provider: CryptoProvider, pki: &Pki) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let provider = Arc::new(provider);
    let mut roots = RootCertStore::empty();
    roots.add(pki.root.clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server.0.clone(), pki.server.1.clone_key())
        .unwrap();
    server.send_tls13_tickets = 0;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(pki.client.0.clone(), pki.client.1.clone_key())
        .unwrap();
    (Arc::new(client), Arc::new(server))
}

/// Moves TLS bytes between the two until neither has anything to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut wire = Vec::with_capacity(32 * 1024);
    loop {
        let mut moved = false;
        while client.wants_write() {
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            let mut bytes = &wire[..];
            while !bytes.is_empty() {
                server.read_tls(&mut bytes).unwrap();
                server.process_new_packets().unwrap();
            }
            moved = true;
        }
        while server.wants_write() {
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            let mut bytes = &wire[..];
            while !bytes.is_empty() {
                client.read_tls(&mut bytes).unwrap();
                client.process_new_packets().unwrap();
            }
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn connect(
    (client_config, server_config): &(Arc<ClientConfig>, Arc<ServerConfig>),
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("app.foo.svc.cluster.local").unwrap();
    let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    pump(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    (client, server)
}

/// One 1 kB record each way, read out on the other side.
fn exchange(client: &mut ClientConnection, server: &mut ServerConnection) {
    use std::io::{Read, Write};
    let message = [b'x'; 1024];
    let mut got = [0u8; 1024];
    client.writer().write_all(&message).unwrap();
    pump(client, server);
    server.reader().read_exact(&mut got).unwrap();
    server.writer().write_all(&message).unwrap();
    pump(client, server);
    client.reader().read_exact(&mut got).unwrap();
}

fn tls_rows(provider_name: &str, provider: CryptoProvider, pki: &Pki, connections: usize) {
    let configs = configs(provider, pki);
    // Warm up (lazy statics, the provider's tables), and say what was negotiated.
    let (client, _server) = connect(&configs);
    let suite = client.negotiated_cipher_suite().unwrap().suite();
    let group = client.negotiated_key_exchange_group().unwrap().name();
    drop((client, _server));

    let handshake = fastest(500, 1, || {
        std::hint::black_box(connect(&configs));
    });
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let pair = connect(&configs);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(pair);

    let (rust_before, malloc_before) = (LIVE.load(Ordering::Relaxed), malloc_in_use());
    let mut pairs: Vec<_> = (0..connections).map(|_| connect(&configs)).collect();
    let (rust_handshake, malloc_handshake) = (LIVE.load(Ordering::Relaxed), malloc_in_use());
    for (client, server) in &mut pairs {
        exchange(client, server);
    }
    let (rust_exchange, malloc_exchange) = (LIVE.load(Ordering::Relaxed), malloc_in_use());
    let per = |bytes: isize| bytes as f64 / connections as f64 / 2.0;
    println!(
        "| {provider_name} | {suite:?}, {group:?} | {:.0} | {allocations} | {:.0} ({:.0}) | {:.0} ({:.0}) |",
        handshake,
        per(malloc_handshake - malloc_before),
        per(rust_handshake - rust_before),
        per(malloc_exchange - malloc_before),
        per(rust_exchange - rust_before),
    );
    drop(pairs);
}

fn main() {
    let connections = std::env::var("IRONMESH_CRYPTO_CONNECTIONS")
        .map(|n| n.parse().expect("IRONMESH_CRYPTO_CONNECTIONS: a number"))
        .unwrap_or(1000);
    println!("AEAD, one 16 KiB record, TSC cycles per byte (fastest of 5,000):\n");
    println!("| provider | AEAD | seal | open |\n|---|---|---:|---:|");
    aead_rows!("ring 0.17", ring::aead);
    aead_rows!("aws-lc-rs 1", aws_lc_rs::aead);

    let pki = pki();
    println!(
        "\nTLS 1.3 mutual TLS in memory (ECDSA P-256, client certificate required, no tickets), \
         {connections} connections:\n"
    );
    println!(
        "| provider | negotiated | TSC cycles per handshake (both sides) | Rust heap allocations per handshake | \
         heap bytes per connection (of which Rust's), handshake done | after 1 kB each way |\n|---|---|---:|---:|---:|---:|"
    );
    tls_rows(
        "ring",
        rustls::crypto::ring::default_provider(),
        &pki,
        connections,
    );
    tls_rows(
        "aws-lc-rs",
        rustls::crypto::aws_lc_rs::default_provider(),
        &pki,
        connections,
    );
}
