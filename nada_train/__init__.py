"""The method: StyleGAN2/3 generators in plain PyTorch, their checkpoints, CLIP guidance, the losses,
adaptive layer selection and the trainer (StyleGAN-NADA, Gal et al. 2021)."""
