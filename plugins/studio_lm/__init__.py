"""Causal language-model support shared by the text, music and eval plugins: loading a
model and its tokenizer safely, decoding over a key/value cache, batched per-row
sampling and held-out likelihood. Not a plugin (it registers nothing); it exists so the
host never has to know transformers."""
