"""ModelReport: one folder per run with the model's reports and the gate's verdict."""
