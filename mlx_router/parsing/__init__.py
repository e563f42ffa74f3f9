"""Parsers that turn model text into OpenAI's structures: tool calls and reasoning.

Nothing here imports mlx: parsers work on decoded text, so they are tested from tables of real model outputs.
"""
