r"""The embedded demo: its data (drawn faces), tiny offline Qwen-VL models and the run of every stage."""
