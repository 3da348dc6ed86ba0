"""Dataset names → loaders ("module:function", imported on demand); no torch import here."""

DATASETS = {
    "digits": "data.digits:load_digits_splits",
    "MNIST": "data.mnist:load_mnist_splits",
    "CIFAR10": "data.cifar:load_cifar10_splits",
    "CIFAR100": "data.cifar:load_cifar100_splits",
    "synthetic": "data.synthetic:load_synthetic_splits",
    "TinyImageNet": "data.tiny_imagenet:load_tiny_imagenet_splits",
    "ImageNet": "data.imagenet:load_imagenet_splits",
    "FfcvImageNet": "data.ffcv_imagenet:load_ffcv_imagenet_splits",
    "Caltech101": "data.caltech101:load_caltech101_splits",
}

# Dataset names of upstream configs outside this project, with the reason.
OUT_OF_SCOPE = {
    "Wiki": "(WikiText-2) is read by upstream's separate language-model scripts "
            "(transformer_main.py), not by its main.py; language models are not part of "
            "this project",
}

PLANNED: dict[str, str] = {}
