"""Prompt compression (LLMLingua-2), plugged into the gateway's body-rewrite seam."""
