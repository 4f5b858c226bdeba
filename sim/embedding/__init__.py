"""Prompt embeddings: the embedders (one file each), embedding a trace, similarity maps onto CLIP's scale and
their evaluation against a CLIP retrieval log."""
