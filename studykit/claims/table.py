"""The papers' claims that the notebooks test, as data: one `Claim` per row of the scorecard.

Each claim names the paper, where in it the claim stands, the setting of the paper's numbers,
the paper's own numbers for the two rows it compares, the metric, and the direction the paper
reports. Where a paper states a direction only in words (a figure without numbers), the
numbers are ``None`` and the note says so. The notebook that tests a claim names its rows as
the claim does (``a`` and ``b``).
"""

from __future__ import annotations

from dataclasses import dataclass

AUGMAX = "AugMax (Wang et al., NeurIPS 2021)"
RAM = "RobustAugMix (Martinez-Martinez & Brown, 2022)"
MAXUP = "MaxUp (Gong et al., CVPR 2021)"
ADA = "AdA (Calian et al., ICLR 2022)"
ADVBN = "AdvBN (Shu et al., NeurIPS 2021)"
PGDAT = "PGD-AT (Madry et al., ICLR 2018), AugMax's baseline"


@dataclass(frozen=True)
class Claim:
    """One comparison a paper reports.

    Attributes:
        key: short identifier (unique).
        notebook: the notebook that tests it (stem).
        statement: the claim in words, as the scorecard prints it.
        paper: the paper that makes it.
        source: its table or figure (and section).
        setting: dataset and architecture of the paper's numbers.
        metric: what is compared: ``clean_acc``, ``ra``, ``mce``, ``adv/<norm>/<eps>``
            (`studykit.claims.measure.unit_values`), or a per-unit value the notebook measures
            (``ssim``, ``certified@<r>``, ``view_acc``).
        a, b: the notebook's names of the two rows; the measured difference is ``a - b``.
        higher: the paper reports ``a`` above ``b`` (False: below).
        paper_a, paper_b: the paper's numbers (None: not stated).
        note: what a reader should know about the paper's numbers.
    """

    key: str
    notebook: str
    statement: str
    paper: str
    source: str
    setting: str
    metric: str
    a: str
    b: str
    higher: bool = True
    paper_a: float | None = None
    paper_b: float | None = None
    note: str = ""

    def paper_value(self) -> str:
        """The paper's difference and numbers as text (``+0.87 (90.36 vs 89.49)``)."""
        if self.paper_a is None or self.paper_b is None:
            side = "a > b" if self.higher else "a < b"
            return f"{side} (in words, no numbers)"
        return f"{self.paper_a - self.paper_b:+.2f} ({self.paper_a:g} vs {self.paper_b:g})"


_C10_R18 = "CIFAR-10(-C), ResNet-18"
_C10_RAM = "CIFAR-10(-C), WRN-50-2"
_C10_ADA = "CIFAR-10(-C), PreAct-ResNet-50"
_C100_R18 = "CIFAR-100(-C), ResNet-18"
_C10_WRN40 = "CIFAR-10(-C), WRN-40-2"


def _table8_over(a: str, b: str, paper_a: float, paper_b: float) -> Claim:
    """AugMax Table 8: row ``a`` has higher RA than row ``b`` (``"AugMax-DuBN"``; notebook 02
    names its rows in lower case)."""
    key = f"{a}_over_{b}_ra".lower().replace("-", "_")
    return Claim(key, "02_augmax_dubin", f"{a} has higher RA than {b}", AUGMAX,
                 "Table 8 (3 seeds)", _C10_WRN40, "ra", a.lower(), b.lower(), True,
                 paper_a, paper_b)


CLAIMS: tuple[Claim, ...] = (
    # ---- 01 baselines ------------------------------------------------------------------
    Claim("augmix_over_standard_ra", "01_baselines", "AugMix has higher RA than standard training",
          AUGMAX, "Table 2", _C10_R18, "ra", "augmix", "standard", True, 89.49, 74.75),
    Claim("augmix_over_standard_clean", "01_baselines",
          "AugMix keeps (slightly raises) clean accuracy", AUGMAX, "Table 2", _C10_R18,
          "clean_acc", "augmix", "standard", True, 95.79, 95.56),
    # ---- 02 AugMax and DuBIN -------------------------------------------------------------
    Claim("augmax_over_augmix_ra", "02_augmax_dubin", "AugMax-DuBIN has higher RA than AugMix",
          AUGMAX, "Table 2", _C10_R18, "ra", "augmax-dubin", "augmix", True, 90.36, 89.49),
    Claim("augmax_over_standard_ra", "02_augmax_dubin",
          "AugMax-DuBIN has higher RA than standard training", AUGMAX, "Table 2", _C10_R18, "ra",
          "augmax-dubin", "standard", True, 90.36, 74.75),
    Claim("augmax_over_standard_clean", "02_augmax_dubin",
          "AugMax-DuBIN keeps clean accuracy (slightly above standard)", AUGMAX, "Table 2",
          _C10_R18, "clean_acc", "augmax-dubin", "standard", True, 95.76, 95.56),
    Claim("dubin_over_dubn_ra", "02_augmax_dubin",
          "With AugMax, DuBIN gives higher RA than DuBN", AUGMAX, "Table 8 (3 seeds)",
          _C10_WRN40, "ra", "augmax-dubin", "augmax-dubn", True, 90.67, 89.60),
    Claim("augmix_dubin_over_bn_ra", "02_augmax_dubin",
          "DuBIN raises AugMix's RA too", AUGMAX, "Table 8 (3 seeds)", _C10_WRN40,
          "ra", "augmix-dubin", "augmix-bn", True, 89.74, 89.01),
    # Table 8's own reading: each AugMax row above both AugMix rows it is fair to compare with.
    _table8_over("AugMax-DuBN", "AugMix-BN", 89.60, 89.01),
    _table8_over("AugMax-DuBN", "AugMix-DuBN", 89.60, 89.11),
    _table8_over("AugMax-DuBIN", "AugMix-IBN", 90.67, 89.17),
    _table8_over("AugMax-DuBIN", "AugMix-DuBIN", 90.67, 89.74),
    Claim("pgd_at_below_augmax_ra", "02_augmax_dubin",
          "PGD-AT has lower RA than AugMax-DuBIN", AUGMAX, "Table 10",
          _C100_R18, "ra", "pgd_at", "augmax-dubin", False, 47.71, 64.02),
    Claim("pgd_at_over_augmax_linf", "02_augmax_dubin",
          "PGD-AT is more robust than AugMax-DuBIN to Linf PGD at 8/255", PGDAT,
          "not reported by AugMax (Sec. 3.2 uses PGD-AT as the hard, undiverse extreme)",
          "CIFAR-10, any", "adv/linf/0.03137", "pgd_at", "augmax-dubin", True,
          note="AugMax reports no Lp robustness; the direction is PGD-AT's purpose"),
    # ---- 03 diversity and hardness -------------------------------------------------------
    Claim("augmax_views_harder_than_augmix", "03_diversity_and_hardness",
          "AugMax images are harder for a standard model than AugMix images", AUGMAX,
          "Fig. 1 and Sec. 3.2 (in words)", "CIFAR-10, ResNeXt-29", "view_acc", "augmax",
          "augmix", False, note="hardness as the standard model's accuracy on the views"),
    Claim("pgd_views_harder_than_augmax", "03_diversity_and_hardness",
          "PGD images are harder still than AugMax images", AUGMAX,
          "Fig. 1 and Sec. 3.2 (in words)", "CIFAR-10, ResNeXt-29", "view_acc", "pgd", "augmax",
          False, note="hardness as the standard model's accuracy on the views"),
    # ---- 04 RobustAugMix -----------------------------------------------------------------
    Claim("robust_augmix_over_standard_l2", "04_robust_augmix",
          "RobustAugMix is far more robust to L2 PGD (eps 0.5) than standard training", RAM,
          "Fig. 2 (plot only)", _C10_RAM, "l2@0.5", "robust_augmix", "standard", True),
    Claim("robust_augmix_over_augmix_l2", "04_robust_augmix",
          "RobustAugMix is far more robust to L2 PGD (eps 0.5) than AugMix", RAM,
          "Fig. 2 (plot only)", _C10_RAM, "l2@0.5", "robust_augmix", "augmix", True),
    Claim("robust_augmix_over_pgd_at_ra", "04_robust_augmix",
          "RobustAugMix beats L2 PGD-AT on corruptions", RAM,
          "Sec. 5, Figs. 1, 3-6 (every corruption type; plots only)", _C10_RAM, "ra",
          "robust_augmix", "pgd_at_l2", True),
    Claim("robust_augmix_over_standard_ra", "04_robust_augmix",
          "RobustAugMix has higher RA than standard training", RAM,
          "Sec. 5 (15 of 19 corruptions; plots only)", _C10_RAM, "ra", "robust_augmix",
          "standard", True),
    # ---- 05 MaxUp ------------------------------------------------------------------------
    Claim("maxup_cutout_over_cutout", "05_maxup", "MaxUp+Cutout (m=4) beats plain Cutout",
          MAXUP, "Table 3 (5 runs)", "CIFAR-10, ResNet-110", "clean_acc", "cutout m=4",
          "cutout m=1", True, 95.41, 94.84),
    Claim("maxup_m4_over_m1", "05_maxup", "m = 4 copies beat m = 1 (Cutout)", MAXUP,
          "Table 5 (5 runs)", "CIFAR-100, ResNet-110", "clean_acc", "cutout m=4", "cutout m=1",
          True, 75.26, 73.64, note="the paper's m ablation is on CIFAR-100 only"),
    Claim("maxup_gauss_certified_025", "05_maxup",
          "MaxUp+Gauss certifies more images at L2 radius 0.25 than Gaussian augmentation",
          MAXUP, "Table 6", "CIFAR-10, ResNet-110", "certified@0.25", "gauss m=4", "gauss m=1",
          True, 74, 60, note="the paper's rows are the best over sigma and m at each radius"),
    Claim("maxup_gauss_certified_05", "05_maxup",
          "MaxUp+Gauss certifies more images at L2 radius 0.5 than Gaussian augmentation",
          MAXUP, "Table 6", "CIFAR-10, ResNet-110", "certified@0.5", "gauss m=4", "gauss m=1",
          True, 57, 43, note="the paper's rows are the best over sigma and m at each radius"),
    # ---- 06 AdA --------------------------------------------------------------------------
    Claim("ada_over_standard_mce", "06_adversarial_augment",
          "AdA has lower mCE than standard training", ADA, "Table 1", _C10_ADA, "mce", "AdA",
          "standard", False, 12.49, 25.17, note="mCE = 100 - RA, no normalization"),
    Claim("ada_above_deepaugment_mce", "06_adversarial_augment",
          "AdA alone has higher mCE than DeepAugment", ADA, "Table 1", _C10_ADA, "mce", "AdA",
          "DeepAugment", True, 12.49, 11.67,
          note="AdA wins only combined: AdA+AugMix 8.80 vs DeepAugment+AugMix 10.15"),
    Claim("ada_over_standard_clean", "06_adversarial_augment",
          "AdA raises clean accuracy", ADA, "Table 2", _C10_ADA, "clean_acc", "AdA", "standard",
          True, 96.18, 95.77),
    Claim("ada_over_standard_linf", "06_adversarial_augment",
          "AdA is more robust to Linf attacks at 2/255 than standard training", ADA, "Table 2",
          _C10_ADA, "adv/linf/0.007843", "AdA", "standard", True, 44.39, 0.85,
          note="the paper attacks with AutoAttack and MultiTargeted; here PGD"),
    Claim("ada_over_standard_l2", "06_adversarial_augment",
          "AdA is more robust to L2 attacks at 0.5 than standard training", ADA, "Table 2",
          _C10_ADA, "adv/l2/0.5", "AdA", "standard", True, 8.61, 0.0,
          note="the paper attacks with AutoAttack and MultiTargeted; here PGD"),
    Claim("ada_ssim_falls_with_radius", "06_adversarial_augment",
          "AdA images move further from the originals (lower SSIM) as nu grows", ADA,
          "Fig. 1b and Sec. 2 (in words; mean SSIM .99 at nu = 0.015)", "CIFAR-10, EDSR",
          "ssim", "nu=0.0075", "nu=0.015", True,
          note="the paper describes the spread of the SSIM density; here its mean"),
    # ---- 07 AdvBN ------------------------------------------------------------------------
    Claim("advbn_over_standard_mce", "07_advbn",
          "AdvBN fine-tuning lowers the corruption error of its base model", ADVBN, "Table 1",
          "ImageNet-C, ResNet-50", "mce", "AdvBN", "standard", False, 72.7, 76.7,
          note="the paper's mCE is ImageNet-C's AlexNet-normalized one; here plain 100 - RA"),
    Claim("advbn_over_standard_clean", "07_advbn",
          "AdvBN fine-tuning raises clean accuracy", ADVBN, "Table 8", "ImageNet, ResNet-50",
          "clean_acc", "AdvBN", "standard", True, 77.0, 76.1),
    # ---- 08 benchmark: every method on one recipe ----------------------------------------
    Claim("augmax_over_augmix_sta", "08_benchmark",
          "AugMax-DuBIN is more robust than AugMix to the worst-of-10 spatial attack", AUGMAX,
          "Table 11 (CIFAR10-STA)", "CIFAR-10, ResNeXt-29", "spatial", "augmax-dubin", "augmix",
          True, 63.20, 54.30),
    Claim("augmax_over_standard_sta", "08_benchmark",
          "AugMax-DuBIN is more robust than standard training to the worst-of-10 spatial attack",
          AUGMAX, "Table 11 (CIFAR10-STA)", "CIFAR-10, ResNeXt-29", "spatial", "augmax-dubin",
          "standard", True, 63.20, 30.30),
    Claim("augmax_over_augmix_cifar10_1", "08_benchmark",
          "AugMax-DuBIN is more accurate than AugMix on CIFAR-10.1", AUGMAX, "Table 11",
          "CIFAR-10.1, ResNeXt-29", "cifar10.1", "augmax-dubin", "augmix", True, 90.64, 88.90,
          note="needs the CIFAR-10.1 files (studykit fetch cifar10.1)"),
    Claim("augmax_over_advmix_ra", "08_benchmark", "AugMax-DuBIN has higher RA than AdvMix",
          AUGMAX, "Table 10", _C100_R18, "ra", "augmax-dubin", "advmix", True,
          64.02, 56.89),
    Claim("augmax_over_augmix_pgdat_ra", "08_benchmark",
          "AugMax-DuBIN has higher RA than AugMix+PGDAT", AUGMAX, "Table 10",
          _C100_R18, "ra", "augmax-dubin", "augmix_pgdat", True, 64.02, 51.39),
    Claim("augmax_over_advmax_ra", "08_benchmark", "AugMax-DuBIN has higher RA than AdvMax",
          AUGMAX, "Table 10", _C100_R18, "ra", "augmax-dubin", "advmax", True,
          64.02, 38.65),
    Claim("pgd_at_below_standard_clean", "08_benchmark",
          "PGD-AT costs clean accuracy against standard training", AUGMAX, "Table 10",
          "CIFAR-100, ResNet-18", "clean_acc", "pgd_at", "standard", False, 60.94, 77.99),
    Claim("deepaugment_over_standard_mce", "08_benchmark",
          "DeepAugment has lower mCE than standard training", ADA, "Table 1", _C10_ADA, "mce",
          "deepaugment", "standard", False, 11.67, 25.17,
          note="mCE = 100 - RA, no normalization"),
)


def claims_of(notebook: str) -> list[Claim]:
    """The claims a notebook tests, in table order.

    Raises:
        ValueError: no claim names that notebook.
    """
    chosen = [c for c in CLAIMS if c.notebook == notebook]
    if not chosen:
        known = sorted({c.notebook for c in CLAIMS})
        raise ValueError(f"no claims for notebook {notebook!r}; notebooks with claims: {known}")
    return chosen
