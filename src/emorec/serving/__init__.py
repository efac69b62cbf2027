"""emorec.serving"""
