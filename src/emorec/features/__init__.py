"""emorec.features"""
