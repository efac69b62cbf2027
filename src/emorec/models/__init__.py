"""emorec.models"""
