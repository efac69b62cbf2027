"""emorec.training"""
