"""Image-to-image networks that methods train beside the classifier.

- :mod:`~studykit.nets.corruption_net`: the corruption network whose weights AdA perturbs
  adversarially and DeepAugment distorts at random (an image-to-image autoencoder pretrained to
  reconstruct).
- :mod:`~studykit.nets.distortions`: DeepAugment's operations on that network's weights and
  features, drawn per image.
- :mod:`~studykit.nets.autoencoder`: AdvBN's decoder from a classifier's features back to images
  (Fig. 2-3 reconstructions and strength sweeps).
"""
