//! tarpc 0.38: a `#[tarpc::service]` echo over plain TCP (no encryption), bincode through
//! tarpc's serde transport with its length-delimited framing. TCP_NODELAY on both ends (as
//! for tonic); tarpc's default client and server settings otherwise. The server spawns a task
//! per request (`execute`), as tarpc's examples do.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::StreamExt as _;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tarpc::{client, context};
use tokio::net::{TcpListener, TcpStream};

use crate::rpc::Rpc;

#[tarpc::service]
pub trait Echo {
    /// Answers with its argument.
    async fn echo(data: Bytes) -> Bytes;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, data: Bytes) -> Bytes {
        data
    }
}

#[derive(Clone)]
pub struct TarpcRpc {
    client: EchoClient,
}

/// Starts an echo server on 127.0.0.1 and connects a client to it, on the current runtime.
pub async fn connect() -> TarpcRpc {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("tarpc listener");
    let addr = listener.local_addr().expect("tarpc server address");
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let _ = io.set_nodelay(true);
            let framed = LengthDelimitedCodec::builder().new_framed(io);
            let transport = tarpc::serde_transport::new(framed, Bincode::default());
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(EchoServer.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    }),
            );
        }
    });
    let io = TcpStream::connect(addr).await.expect("tarpc connect");
    io.set_nodelay(true).expect("TCP_NODELAY");
    let framed = LengthDelimitedCodec::builder().new_framed(io);
    let transport = tarpc::serde_transport::new(framed, Bincode::default());
    let client = EchoClient::new(client::Config::default(), transport).spawn();
    TarpcRpc { client }
}

impl Rpc for TarpcRpc {
    async fn call(&self, payload: Bytes) -> Bytes {
        self.client
            .echo(context::current(), payload)
            .await
            .expect("a tarpc answer")
    }
}
