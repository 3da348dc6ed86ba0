"""Dataset names → loaders ("module:function", imported on demand); no torch import here."""

DATASETS = {
    "digits": "data.digits:load_digits_splits",
    "MNIST": "data.mnist:load_mnist_splits",
    "CIFAR10": "data.cifar:load_cifar10_splits",
    "CIFAR100": "data.cifar:load_cifar100_splits",
    "synthetic": "data.synthetic:load_synthetic_splits",
}

PLANNED = {
    "TinyImageNet": "issue 8 (scale)",
    "ImageNet": "issue 8 (scale)",
    "FfcvImageNet": "issue 8 (scale)",
}
