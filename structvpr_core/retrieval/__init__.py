"""Descriptor search (faiss index) and the persistent map database built on it."""
