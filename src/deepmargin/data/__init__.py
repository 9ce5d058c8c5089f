"""Datasets read from local files (MNIST IDX, CIFAR pickles), the bundled digits, 2-D toy sets, label noise and subsets."""
