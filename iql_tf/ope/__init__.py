"""Off-policy evaluation: a fixed policy's value estimated from a dataset, without a simulator.

    ope/fqe.py          fitted Q evaluation's network and its compiled updates
    ope/estimation.py   a policy and a dataset -> the FQE table, the training (resumable, logged), the estimate
    ope/ranking.py      every kept checkpoint of a sweep's runs, estimated and ranked (iql-report --ope_dataset)
"""
