"""Hydra configs, shipped as package data so a normal install finds them."""
