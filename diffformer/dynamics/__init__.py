"""Learning dynamics: attention measured while a model trains (tracker.py) and its picture (figure.py)."""
