//! gilkit-embed: the OpenAI-compatible embedding client and service core (in progress).
