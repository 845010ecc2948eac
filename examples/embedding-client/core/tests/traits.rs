//! Public types are `Send + Sync` and the client's futures are `Send`, so they can be shared across
//! threads and spawned on a multi-threaded runtime.

use gilkit_embed::service::ServiceHandle;
use gilkit_embed::testing::FaultServer;
use gilkit_embed::{
    BatchResults, EmbedError, EmbeddingClient, EmbeddingConfig, Embeddings, OpenAiEmbedder,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<EmbeddingClient>();
    send_sync::<OpenAiEmbedder>();
    send_sync::<EmbeddingConfig>();
    send_sync::<Embeddings>();
    send_sync::<EmbedError>();
    send_sync::<BatchResults>();
    send_sync::<ServiceHandle>();
    send_sync::<FaultServer>();
}

#[test]
fn client_futures_are_send() {
    let client = EmbeddingClient::new(EmbeddingConfig::openai("k")).unwrap();
    let texts = vec!["a".to_string()];
    let batches = vec![texts.clone()];
    send(&client.embed("a"));
    send(&client.embed_many(&texts));
    send(&client.embed_batches(&batches, None, None));
}
