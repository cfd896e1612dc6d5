"""Labelling by people: query batches written for annotators, label files read back
(:mod:`~rayfal.labelling.batches`, :mod:`~rayfal.labelling.imports`), and Label Studio
(:mod:`~rayfal.labelling.label_studio`). Values in, values out: the campaign layer decides
when a batch is asked for and where its labels go."""
