"""Prompt templates (string.Template, `$name` placeholders), shipped as package data."""
