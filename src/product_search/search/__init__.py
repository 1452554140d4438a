"""Search over the product table in PostgreSQL: the analyser of product text,
BM25 weights, and the table that serves dense, lexical and hybrid search."""
