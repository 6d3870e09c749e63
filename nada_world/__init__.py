"""A small procedural world where StyleGAN-NADA can be run, seen and measured offline: a renderer of
shapes in several styles, a small CLIP trained on it, a StyleGAN2 trained on its "photo" style only,
and a judge that decides whether adapted images changed style and kept their content."""
