"""The only package that imports Ray: the Tuner (runner), Tune callbacks and the trial trainable."""
