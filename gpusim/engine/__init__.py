"""The timing model: discrete-event simulation of one GPU on simpy. Knows nothing about attention."""
