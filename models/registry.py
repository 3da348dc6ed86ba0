"""Architecture names → constructors ("module:function", imported on demand).

Kept free of torch imports so the config schema can validate names cheaply.  Upstream names
that later work will add are listed in PLANNED so a config naming them gets a clear
"not implemented yet" instead of "unknown".
"""

ARCHITECTURES = {
    "resnet20": "models.resnet_cifar:resnet20",
    "resnet32": "models.resnet_cifar:resnet32",
    "cResNet18": "models.resnet:cifar_resnet18",
    "ResNet18": "models.resnet:resnet18",
    "ResNet50": "models.resnet:resnet50",
    "Conv4": "models.small:conv4",
    "lenet_300_100": "models.small:lenet_300_100",
}

PLANNED = {
    "resnet32_double": "issue 8 (scale)",
    "TinyResNet18": "issue 8 (scale)",
    "ResNet101": "issue 8 (scale)",
    "vgg16": "issue 8 (scale)",
    "tinyvgg16": "issue 8 (scale)",
    "WideResNet28": "issue 8 (scale)",
    "MobileNetV2": "issue 8 (scale)",
    "tinyMobileNetV2": "issue 8 (scale)",
}
