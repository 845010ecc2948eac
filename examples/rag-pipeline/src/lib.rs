//! gilkit_rag: the parallel RAG ingestion pipeline (in progress).
