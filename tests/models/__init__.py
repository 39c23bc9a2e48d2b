"""Small real models built in the tests, shaped like the ones people bring: a CNN exported with batch 1,
a recurrent voice detector with its state on axis 1 and a scalar sample rate, and their samples."""
