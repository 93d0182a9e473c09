"""The offline demo: synthesized corpus (`corpus`, `text`), the shipped English stand-in (`standin`), the two arms
(`pipeline`) and the report (`report`). The recipe library (`enhi/`) never imports it."""
