"""Servers that rerankd is compared with, written here as their users write them."""
