//! A stock gRPC client on the CA's Unix socket: the bytes gRPC C-core (grpcio 1.85.3, `unix://` target,
//! default settings) sends for two CreateCertificate calls, replayed against the real CA service.
//! C-core puts the percent-encoded socket path in `:authority` (`tmp%2Fh12c%2Fxds.sock`), the second call
//! by reference to HPACK's dynamic table. tonic's h2 resets such streams (PROTOCOL_ERROR); served through
//! `any_authority`, both calls reach the service, which answers UNAUTHENTICATED (no credential was sent).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ironmesh_identity::ca_service::CaService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Captured from grpcio with a Unix listener that answered an empty SETTINGS frame: preface, SETTINGS,
/// WINDOW_UPDATE, SETTINGS ack, then per call a HEADERS frame, a WINDOW_UPDATE and a DATA frame with the
/// request `validity_duration: 60`.
const GRPCIO_TWO_CALLS: &[&str] = &[
    "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a000024040000000000000200000000000300000000000400",
    "400000000500400000000600004000fe0300000001000004080000000000003f000100000004010000000000010d0104",
    "0000000140053a70617468382f697374696f2e76312e617574682e497374696f43657274696669636174655365727669",
    "63652f4372656174654365727469666963617465400a3a617574686f7269747915746d70253246683132632532467864",
    "732e736f636b8386400c636f6e74656e742d74797065106170706c69636174696f6e2f67727063400274650874726169",
    "6c6572734014677270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c20677a",
    "6970400c677270632d74696d656f757403333053400a757365722d6167656e7430677270632d707974686f6e2f312e38",
    "352e3320677270632d632f35382e302e3020286c696e75783b2063687474703229000004080000000001000000050000",
    "070001000000010000000002183c0000040800000000000000000500001d010400000003c4c38386c2c1c0400c677270",
    "632d74696d656f75740633303130306dbf000004080000000003000000050000070001000000030000000002183c0000",
    "0408000000000000000005",
];

/// `grpc-message` is percent-encoded on the wire (gRPC's PROTOCOL-HTTP2 spec).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn captured() -> Vec<u8> {
    let hex: String = GRPCIO_TWO_CALLS.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// How each stream ended: `Ok(grpc-status, grpc-message)` from its trailers, or `Err(RST_STREAM code)`.
type Outcomes = BTreeMap<u32, Result<(String, String), u32>>;

/// Replays the capture on `socket` and reads the server's frames until both calls ended.
async fn replay(socket: &Path) -> Outcomes {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(&captured()).await.unwrap();
    let mut decoder = loona_hpack::Decoder::new();
    let mut outcomes = Outcomes::new();
    let mut input = Vec::new();
    let read = async {
        while outcomes.len() < 2 {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the server closed the connection; outcomes so far {outcomes:?}"
            );
            input.extend_from_slice(&chunk[..n]);
            while input.len() >= 9 {
                let length = usize::from(input[0]) << 16
                    | usize::from(input[1]) << 8
                    | usize::from(input[2]);
                if input.len() < 9 + length {
                    break;
                }
                let frame: Vec<u8> = input.drain(..9 + length).collect();
                let (kind, flags) = (frame[3], frame[4]);
                let id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
                let payload = &frame[9..];
                match kind {
                    // HEADERS (tonic's answers are neither padded nor prioritised, nor continued).
                    0x1 => {
                        let fields: BTreeMap<String, String> = decoder
                            .decode(payload)
                            .unwrap()
                            .into_iter()
                            .map(|(n, v)| {
                                (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                            })
                            .collect();
                        if flags & 0x1 != 0 {
                            outcomes.insert(
                                id,
                                Ok((
                                    fields.get("grpc-status").cloned().unwrap_or_default(),
                                    fields.get("grpc-message").cloned().unwrap_or_default(),
                                )),
                            );
                        }
                    }
                    // RST_STREAM
                    0x3 => {
                        let code =
                            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                        outcomes.insert(id, Err(code));
                    }
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("both calls end within 10 s");
    outcomes
}

#[tokio::test]
async fn tonic_alone_resets_the_streams_of_a_stock_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::new_ca(&dir.path().join("ca"));
    let credentials = std::sync::Arc::new(ironmesh_identity::CredentialAuthority::from_secret(
        &[3; 32],
    ));
    let socket = dir.path().join("plain.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CaService::new(ca, credentials).into_server())
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let outcomes = replay(&socket).await;
    // PROTOCOL_ERROR (1) on both: the bug that `any_authority` exists for.
    assert_eq!(outcomes, Outcomes::from([(1, Err(1)), (3, Err(1))]));
    server.abort();
}

#[tokio::test]
async fn the_ca_answers_a_stock_client_whatever_its_authority() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = support::GrpcCa::start(dir.path()).await;
    let outcomes = replay(&grpc.socket).await;
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    for (stream, outcome) in outcomes {
        let (status, message) =
            outcome.unwrap_or_else(|code| panic!("stream {stream} was reset with code {code}"));
        assert_eq!(
            status, "16",
            "UNAUTHENTICATED on stream {stream}: {message}"
        );
        assert!(
            percent_decoded(&message).contains("no credential"),
            "{message}"
        );
    }
}
