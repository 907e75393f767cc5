"""Readers: one per file format. They yield samples and labels and know nothing about models."""
