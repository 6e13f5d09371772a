"""The three OpenFace 3.0 networks as plain PyTorch modules, written for this project (no torchvision,
no timm), with the parameter names of the official checkpoints so they load with strict key matching:

- :mod:`.retinaface`: RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface, ``cfg_mnet``, phase "test");
- :mod:`.mtl`: OpenFace 3.0's multitask net on an EfficientNet-B0 (:mod:`.efficientnet`);
- :mod:`.star`: STAR's 4-stack hourglass for 98 WFLW landmarks.
"""
