"""The study record that a run carries in run.json (`study`: kind, role, cutoff, fraction, seed): its vocabulary,
shared by the training that writes it (poc.train.studies) and the analysis that reads it (poc.analysis.study_results).
"""

KINDS = ("sweep", "seeds", "data_size")
HEAD_ONLY = "head only"  # a sweep's phase-1 run: no backbone layer trains
REPEATS = "repeats"  # the one row of a seeds study
