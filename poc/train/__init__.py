"""One run: the plan of phases, the phases, cached phase 1, features, tf.distribute, studies, baselines, the demo."""
