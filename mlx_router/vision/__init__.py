"""Images and PDFs: decoding and limits on the HTTP side (no MLX here), and the engine's vision adapters."""
