//! gilkit_embed: Python bindings of the embedding client and service (in progress).
