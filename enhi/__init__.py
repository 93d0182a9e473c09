"""Reusable pieces of the English + new-language Parakeet fine-tuning recipe.

The top-level scripts (`merge_token.py`, `ft_110M_enhi_demo.py`) stay short and import from here.
"""
